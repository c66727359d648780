"""Build modelyard's container images with buildah: no Docker engine, no registry, no network
inside a build.

    python docker/build_images.py serve serve-registry app train   # what `make images` runs
    python docker/build_images.py serve --bundle DIR     # bake a bundle in at /srv/bundle

For each image it stages a small build context under build/images/<image>/: a wheelhouse made
here by ``pip wheel -c requirements.lock`` (dependencies and the modelyard wheel apart, each in a
directory named by a digest of its contents, so that buildah's layer cache is hit exactly when
the wheels are the same) and the bundle to bake in. The Dockerfiles install from it with
``--no-index``: the build needs no network, and the image holds exactly the locked versions.

The base is ``$MODELYARD_IMAGE_BASE`` when set (e.g. python:3.11-slim where Docker Hub is
reachable), else a Debian bookworm made here once by debootstrap and kept as
localhost/modelyard-base:bookworm. Layers this script's earlier builds left behind and no current
image uses are removed after each build, so that repeated builds do not fill the disk.
"""

import argparse
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
WORK = REPO / "build" / "images"
BUILDAH = ("buildah", "--storage-driver", os.environ.get("MODELYARD_STORAGE_DRIVER", "overlay"))
LOCAL_BASE = "localhost/modelyard-base:bookworm"
BASE_ENV = "MODELYARD_IMAGE_BASE"
#: Extra places pip looks for wheels (here: the local CPU torch wheel), ``os.pathsep``-separated.
FIND_LINKS_ENV = "MODELYARD_FIND_LINKS"
DEFAULT_FIND_LINKS = "/opt/wheels"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_PIN = "torch==2.13.0"
TORCH_CPU_WHEEL = "torch-2.13.0+cpu-*.whl"
#: What minbase brings that no image needs (apt's package lists and cache, docs, translations).
TRIMMED = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
)
_BUILT_ID = re.compile(r"^--> (?:Using cache )?([0-9a-f]{11,64})$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str
    extras: str
    torch: bool = False


#: registry: MLflow's client, for MODELYARD_BUNDLE=models:/NAME@ALIAS (pulled at start); the app
#: image has it too, for `modelyard monitor models:/...`.
IMAGES = {
    "serve": Image("modelyard-serve", "docker/serve.Dockerfile", ""),
    "serve-registry": Image("modelyard-serve-registry", "docker/serve.Dockerfile", "registry"),
    "app": Image("modelyard-app", "docker/serve.Dockerfile", "ui,monitor,registry"),
    "train": Image("modelyard-train", "docker/train.Dockerfile", "train", torch=True),
}


def run(command: Sequence[str], capture: bool = False) -> str:
    """Run ``command``, echoing its output (and returning it when ``capture``); stop on failure."""
    print("+", " ".join(command), flush=True)
    if not capture:
        subprocess.run(command, check=True)
        return ""
    done = subprocess.run(
        command, check=False, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    print(done.stdout, end="", flush=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")
    return done.stdout


def image_id(reference: str) -> str | None:
    """The id of local image ``reference``, or None when there is none."""
    done = subprocess.run(
        [*BUILDAH, "images", "--quiet", "--no-trunc", reference],
        check=False,
        capture_output=True,
        text=True,
    )
    ids = done.stdout.split()
    return ids[0].removeprefix("sha256:") if done.returncode == 0 and ids else None


def local_base() -> str:
    """Debian bookworm with Python 3.11 (debootstrap minbase, trimmed), made once and kept."""
    if image_id(LOCAL_BASE):
        return LOCAL_BASE
    if shutil.which("debootstrap") is None:
        raise SystemExit(
            f"debootstrap missing (as root: apt-get install debootstrap), or set {BASE_ENV}"
        )
    with tempfile.TemporaryDirectory(prefix="modelyard-base-") as scratch:
        root = Path(scratch) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(root),
                "http://deb.debian.org/debian",
            ]
        )
        for part in TRIMMED:
            for entry in (root / part).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        container = run([*BUILDAH, "from", "scratch"], capture=True).split()[-1]
        mount = run([*BUILDAH, "mount", container], capture=True).split()[-1]
        subprocess.run(f"tar -C {root} -c . | tar -C {mount} -x", shell=True, check=True)
        run([*BUILDAH, "umount", container])
        run([*BUILDAH, "config", "--env", "LANG=C.UTF-8", "--cmd", "python3", container])
        run([*BUILDAH, "commit", "--rm", "--quiet", container, LOCAL_BASE])
    return LOCAL_BASE


def base_image() -> str:
    """``$MODELYARD_IMAGE_BASE``, else the local Debian base (made when missing)."""
    return os.environ.get(BASE_ENV) or local_base()


def wheel_digest(directory: Path) -> str:
    """A digest of the wheels' contents (names and member checksums, not zip timestamps): the
    same for a rebuilt modelyard wheel of unchanged code."""
    sha = hashlib.sha256()
    for wheel in sorted(directory.glob("*.whl")):
        sha.update(wheel.name.encode())
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                sha.update(f"{member.filename}:{member.CRC}:{member.file_size};".encode())
    return sha.hexdigest()[:16]


def find_links(torch_variant: str | None) -> list[str]:
    """pip options for wheels PyPI lacks. For the CPU torch (PyPI's torch is the CUDA build): a
    local directory holding its wheel, else PyTorch's CPU index."""
    dirs = [d for d in os.environ.get(FIND_LINKS_ENV, DEFAULT_FIND_LINKS).split(os.pathsep) if d]
    dirs = [d for d in dirs if Path(d).is_dir()]
    if torch_variant == "cuda":  # PyPI's own wheel; a local +cpu one would win the resolution
        dirs = [d for d in dirs if not any(Path(d).glob(TORCH_CPU_WHEEL))]
    options = [f"--find-links={d}" for d in dirs]
    if torch_variant == "cpu" and not any(any(Path(d).glob(TORCH_CPU_WHEEL)) for d in dirs):
        options.append(f"--extra-index-url={TORCH_CPU_INDEX}")
    return options


def wheelhouse(image: Image, context: Path, torch_variant: str) -> dict[str, str]:
    """Dependencies and modelyard as wheels in ``context``; the build args that point at them."""
    scratch = context / "wheelhouse"
    shutil.rmtree(scratch, ignore_errors=True)
    extras = f"[{image.extras}]" if image.extras else ""
    pip_version = run([sys.executable, "-m", "pip", "--version"], capture=True).split()[1]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--constraint",
            str(LOCK),
            "--wheel-dir",
            str(scratch),
            *find_links(torch_variant if image.torch else None),
            f"{REPO}{extras}",
            f"pip=={pip_version}",
        ]
    )
    # Either build satisfies the pin: make sure the one asked for is here.
    if image.torch and any(scratch.glob(TORCH_CPU_WHEEL)) != (torch_variant == "cpu"):
        raise SystemExit(f"no {torch_variant} wheel of {TORCH_PIN} found (see {FIND_LINKS_ENV})")
    shutil.rmtree(context / "wheels", ignore_errors=True)
    app = context / "wheels" / "app"
    app.mkdir(parents=True)
    for wheel in scratch.glob("modelyard-*.whl"):
        wheel.rename(app / wheel.name)
    shutil.copy(LOCK, scratch / LOCK.name)
    deps = context / "wheels" / f"deps-{wheel_digest(scratch)}"
    scratch.rename(deps)
    named_app = app.with_name(f"app-{wheel_digest(app)}")
    app.rename(named_app)
    return {"DEPS": f"wheels/{deps.name}", "APP": f"wheels/{named_app.name}"}


def stage_bundle(context: Path, bundle: Path | None) -> None:
    target = context / "bundle"
    shutil.rmtree(target, ignore_errors=True)
    if bundle is None:
        target.mkdir(parents=True)
    else:
        shutil.copytree(bundle, target)


def build(image: Image, tag: str, base: str, bundle: Path | None, torch_variant: str) -> str:
    """Build one image; returns its reference."""
    context = WORK / image.name
    context.mkdir(parents=True, exist_ok=True)
    args = {"BASE": base, "EXTRAS": image.extras, **wheelhouse(image, context, torch_variant)}
    if image.torch:
        args["TORCH_VARIANT"] = torch_variant
    else:
        stage_bundle(context, bundle)
    reference = f"localhost/{image.name}:{tag}"
    output = run(
        [
            *BUILDAH,
            "bud",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "--layers",
            "--file",
            str(REPO / image.dockerfile),
            "--tag",
            reference,
            *(f"--build-arg={k}={v}" for k, v in args.items()),
            str(context),
        ],
        capture=True,
    )
    forget_unused_layers(context / f"layers-{tag}.txt", _BUILT_ID.findall(output))
    return reference


def forget_unused_layers(record: Path, used: list[str]) -> None:
    """Remove the images (cached steps) the previous build of this image and tag used and the
    latest did not, unless another image's latest build uses them; then remember ``used``."""
    previous = record.read_text().split() if record.is_file() else []
    record.write_text("".join(f"{i}\n" for i in used))
    kept = [k for r in WORK.glob("*/layers-*.txt") for k in r.read_text().split()]
    stale = [old for old in previous if not any(k[:11] == old[:11] for k in kept)]
    untagged = (
        run(
            [*BUILDAH, "images", "--quiet", "--no-trunc", "--filter", "dangling=true"], capture=True
        )
        .replace("sha256:", "")
        .split()
    )
    for old in reversed([o for o in stale if any(u.startswith(o) for u in untagged)]):
        subprocess.run([*BUILDAH, "rmi", old], check=False, capture_output=True)


def size_mb(reference: str) -> float:
    """The image's size as buildah reports it (uncompressed layers), in MB."""
    out = run([*BUILDAH, "images", "--format", "{{.Size}}", reference], capture=True).split()
    value, unit = float(out[0]), out[1] if len(out) > 1 else "B"
    return value * {"B": 1e-6, "kB": 1e-3, "KB": 1e-3, "MB": 1.0, "GB": 1e3}[unit]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", choices=sorted(IMAGES))
    parser.add_argument("--tag", default="latest")
    parser.add_argument(
        "--bundle", type=Path, help="bundle directory baked into serve, serve-registry and app"
    )
    parser.add_argument("--torch-variant", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--extras",
        help="extras instead of the image's own (e.g. serve-registry with registry,postgres); "
        "the image keeps its name: give such a build its own --tag",
    )
    options = parser.parse_args(argv)
    if shutil.which("buildah") is None:
        parser.error("buildah missing (as root: apt-get install buildah, or `make containers`)")
    base = base_image()
    for name in options.images:
        started = time.monotonic()
        image = IMAGES[name]
        if options.extras is not None:
            image = dataclasses.replace(image, extras=options.extras)
        reference = build(image, options.tag, base, options.bundle, options.torch_variant)
        print(
            f"{reference}: {size_mb(reference):.0f} MB, built in "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
