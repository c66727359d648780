"""The requests ``drift.py`` replays, per family: held-out requests and real shifts of them.

Every request is built from the project's real data as prepared by ``modelyard data prepare``
(the split the model never trained on), with the true value the data holds sent as feedback:

* tabular (AVM, Boliga sales): one sale per request; truth ``price_per_m2``;
* vision (EuroSAT): one test image per request, as the original JPEG; truth its class;
* NILM (REFIT house 2): one gap-free window of mains (``edges=valid``, with its start time) per
  request; truth each appliance's metered power at the window's midpoint (see :func:`nilm` for
  why its no-drift requests come from the training part).
"""

import argparse
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelyard.core.config import load_config

SEED = 0


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]
    truth: dict[str, Any] | None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    requests: list[Request]


@dataclass
class Replay:
    """What one family replays: held-out requests and the drift scenarios."""

    client: httpx.Client
    held_out: list[Request]
    held_out_description: str
    scenarios: list[Scenario] = field(default_factory=list)


Builder = Callable[[argparse.Namespace, httpx.Client], Replay]


@dataclass(frozen=True)
class Family:
    project: str
    data_folder: str
    scenarios: Builder
    overrides: tuple[str, ...] = ()


def json_request(body: Any, truth: dict[str, Any] | None) -> Request:
    return Request(json.dumps(body).encode(), {"content-type": "application/json"}, truth)


def _config(project: str, workdir: Path) -> Any:
    return load_config([f"project={project}", "experiment=quick", f"paths.workdir={workdir}"])


# -- tabular (AVM) ---------------------------------------------------------------------------
def tabular(args: argparse.Namespace, client: httpx.Client) -> Replay:
    import pandas as pd

    from modelyard.projects.tabular.table_io import feature_columns, read_prepared
    from modelyard.projects.tabular.task import load_schema

    cfg = _config("avm", args.workdir)
    schema = load_schema(cfg)
    prepared = Path(cfg.paths.prepared)
    test = read_prepared(prepared, "test", schema).sample(frac=1.0, random_state=SEED)
    val = read_prepared(prepared, "val", schema)
    train = read_prepared(prepared, "train", schema)
    target = schema.target.name

    def requests(frame: pd.DataFrame) -> list[Request]:
        columns = feature_columns(frame, schema)
        out = []
        for i in range(len(frame)):
            row = {
                name: (values[i].isoformat() if hasattr(values[i], "isoformat") else values[i])
                for name, values in columns.items()
                if values[i] is not None
            }
            out.append(json_request(row, {target: float(frame[target].iloc[i])}))
        return out

    held_out = pd.concat([test, val]).sample(frac=1.0, random_state=SEED)
    region = held_out[held_out["zip_code"].str.startswith("8")]
    area = schema.features.numeric[0]
    assert area.name == "area_m2"
    larger = test[test["area_m2"] * 1.5 <= (area.max or np.inf)].copy()
    larger["area_m2"] = larger["area_m2"] * 1.5
    unseen = held_out[~held_out["zip_code"].isin(set(train["zip_code"]))]
    return Replay(
        client=client,
        held_out=requests(test),
        held_out_description=f"the {len(test)} sales of the prepared test split, shuffled",
        scenarios=[
            Scenario(
                "one region (zip 8xxx)",
                f"the {len(region)} held-out (test + validation) sales with zip codes 8000-8999 "
                "(Aarhus and East Jutland) only",
                requests(region),
            ),
            Scenario(
                "areas x1.5",
                f"{len(larger)} test sales with area_m2 x1.5 (those within the schema's "
                f"{area.max} m2); truth: the sale's real price per m2",
                requests(larger),
            ),
            Scenario(
                "new city (zip codes never trained on)",
                f"the {len(unseen)} held-out sales whose zip code has no training sale",
                requests(unseen),
            ),
        ],
    )


# -- vision (EuroSAT; plants as the foreign images) -----------------------------------------
def _multipart(name: str, data: bytes, truth: dict[str, Any] | None) -> Request:
    boundary = "modelyard-drift-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return Request(body, {"content-type": f"multipart/form-data; boundary={boundary}"}, truth)


def _test_images(project: str, args: argparse.Namespace) -> Iterator[tuple[str, bytes, str]]:
    """(member, bytes, class) of the project's test split, shuffled."""
    from modelyard.projects.vision.image_folders import member_reader, stratified_split
    from modelyard.projects.vision.task import VisionTask

    cfg = _config(project, args.workdir)
    task = VisionTask(cfg)
    index = task._index(Path(cfg.paths.raw))
    split = cfg.project.data.split
    test = stratified_split(
        index.labels, float(split.test_fraction), float(split.val_fraction), int(split.seed)
    )["test"]
    np.random.default_rng(SEED).shuffle(test)
    with member_reader(index.source) as read:
        for i in test:
            member = index.members[i]
            yield member, read(member), index.classes[index.labels[i]]


def _reencoded(data: bytes, change: Callable[[Any], Any], quality: int = 95) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        changed = change(image.convert("RGB"))
    out = io.BytesIO()
    changed.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def vision(args: argparse.Namespace, client: httpx.Client) -> Replay:
    from PIL import ImageEnhance, ImageFilter

    most = max(args.sizes)
    images = list(_test_images("eurosat", args))
    shifted = images[:most]

    def scenario(
        name: str, description: str, change: Callable[[Any], Any], quality: int = 95
    ) -> Scenario:
        requests = [
            _multipart(m, _reencoded(d, change, quality), {"label": c}) for m, d, c in shifted
        ]
        return Scenario(name, f"{len(requests)} test images {description}", requests)

    plants = []
    if args.plants_zip.is_file():
        with zipfile.ZipFile(args.plants_zip) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith((".jpg", ".jpeg"))]
            np.random.default_rng(SEED).shuffle(names)
            plants = [_multipart(n, archive.read(n), None) for n in names[:most]]
    return Replay(
        client=client,
        held_out=[_multipart(m, d, {"label": c}) for m, d, c in images],
        held_out_description=f"the {len(images)} images of the test split (original JPEGs)",
        scenarios=[
            scenario(
                "darkened",
                "at 40 % brightness",
                lambda im: ImageEnhance.Brightness(im).enhance(0.4),
            ),
            scenario(
                "blurred",
                "Gaussian-blurred (radius 2 px)",
                lambda im: im.filter(ImageFilter.GaussianBlur(2)),
            ),
            scenario("JPEG q=5", "re-compressed as JPEG at quality 5", lambda im: im, quality=5),
            Scenario(
                "plants images",
                f"{len(plants)} PlantVillage potato-leaf photos (no EuroSAT class: no feedback)",
                plants,
            ),
        ],
    )


# -- NILM ------------------------------------------------------------------------------------
def _windows(house: Any, window: int, count: int, scale: float = 1.0) -> list[Request]:
    """``count`` gap-free windows of ``house`` spread over it, as one-window requests."""
    from modelyard.projects.nilm.windows import valid_window_starts

    starts = valid_window_starts(house.valid, window)
    apart = starts[::window]  # non-overlapping while there are enough of them
    pool = apart if apart.size >= count else starts
    picked = np.random.default_rng(SEED).permutation(pool)[:count]
    middle = window // 2
    requests = []
    for at in picked:
        mains = house.aggregate[at : at + window] * scale
        moment = datetime.fromtimestamp(int(house.times[at]) // 1_000_000_000, UTC)
        truth = {
            name: [round(float(house.targets[at + middle, j]), 1)]
            for j, name in enumerate(house.appliances)
            if np.isfinite(house.targets[at + middle, j])
        }
        body = {
            "aggregate_w": [round(float(v), 1) for v in mains],
            "edges": "valid",
            "start": moment.replace(tzinfo=None).isoformat(),
        }
        requests.append(json_request(body, {"appliances": truth} if truth else None))
    return requests


def nilm(args: argparse.Namespace, client: httpx.Client) -> Replay:
    """No drift: windows of the training part of refit_house2 (the reference's 5,000 are drawn
    from its 632,000 windows: the same distribution, hardly the same windows). The project's
    held-out data is no such sample: its test house is another house, and its validation part
    (the last 10 % of the timeline, 2014-12-14 .. 2015-01-31) is winter, with mains twice the
    year's, so it is a drift scenario here."""
    from modelyard.projects.nilm.splits import split_by_time
    from modelyard.projects.nilm.storage import load_house

    cfg = _config("nilm", args.workdir)
    prepared = Path(cfg.paths.prepared)
    window = int(cfg.project.data.window)
    refit = load_house(prepared / "refit_house2.npz")
    split = split_by_time([refit], float(cfg.project.data.val_fraction))
    train, held = split.train[0], split.val[0]
    ukdale = load_house(prepared / "ukdale_house2.npz")
    most = max(args.sizes)
    same = _windows(train, window, args.no_drift_windows * most)
    return Replay(
        client=client,
        held_out=same,
        held_out_description=(
            f"{len(same)} non-overlapping gap-free {window}-minute windows of the training part "
            "of refit_house2 (the reference's distribution), in random order"
        ),
        scenarios=[
            Scenario(
                "other house (UK-DALE house 2)",
                f"{most} windows of ukdale_house2's mains (the project's test house)",
                _windows(ukdale, window, most),
            ),
            Scenario(
                "same house, mains x1.3",
                f"{most} windows of refit_house2's training part with mains x1.3 (truth unscaled)",
                _windows(train, window, most, scale=1.3),
            ),
            Scenario(
                "same house, held-out winter",
                f"{most} windows of refit_house2's validation part (2014-12-14 .. 2015-01-31)",
                _windows(held, window, most),
            ),
        ],
    )


FAMILIES: dict[str, Family] = {
    "avm": Family("avm", "tables", tabular),
    "eurosat": Family("eurosat", "images", vision),
    "nilm": Family("nilm", "nilm", nilm),
}
