"""The tabular form and batch CSV, from a schema alone (no server, no browser): a table that is
not the AVM's gets its own fields, ranges, choices, answer numbers and CSV columns."""

import csv
import datetime as dt
import io
from typing import Annotated, Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from modelyard.webui.client import ServerClient
from modelyard.webui.tabular_batch import (
    BatchError,
    BatchResult,
    check_columns,
    read_table,
    request_row,
    result_csv,
)
from modelyard.webui.tabular_form import (
    SchemaError,
    answer_fields,
    answer_markdown,
    request_fields,
    row_from_values,
    rows_per_request,
    warnings_markdown,
)
from modelyard.webui.views import ViewContext


class Plot(BaseModel):
    """A crop-yield table: nothing in it is an apartment."""

    model_config = ConfigDict(extra="forbid")
    area_ha: float = Field(ge=0.1, le=500, description="Sown area")
    rain_mm: float | None = Field(None, ge=0, le=3000)
    soil: str | None = Field(None, examples=["clay", "sand", "loam"], description="Soil class")
    farm: int | str
    sown_on: dt.date
    rows_planted: int | None = Field(None, ge=1)


class Harvest(BaseModel):
    yield_t_per_ha: float = Field(description="Predicted yield_t_per_ha")
    warnings: list[str] = Field(default_factory=list)
    total_t: float = Field(description="yield_t_per_ha x area_ha")


class HarvestResponse(BaseModel):
    model: str
    predictions: list[Harvest]


INFO = {"task": "tabular", "details": {"target": "yield_t_per_ha", "unit": "t/ha"}}


@pytest.fixture(scope="module")
def crop_openapi() -> dict[str, Any]:
    """The OpenAPI schema FastAPI writes for a crop server taking a row or a list of rows."""
    app = FastAPI()

    @app.post("/predict", response_model=HarvestResponse)
    def predict(body: Plot | Annotated[list[Plot], Field(max_length=50)]) -> Any:
        raise NotImplementedError  # only the schema is read

    return app.openapi()


def test_a_non_avm_schema_gives_its_own_fields(crop_openapi: dict[str, Any]) -> None:
    fields = {f.name: f for f in request_fields(crop_openapi)}

    assert list(fields) == ["area_ha", "rain_mm", "soil", "farm", "sown_on", "rows_planted"]
    assert {n for n, f in fields.items() if f.required} == {"area_ha", "farm", "sown_on"}
    area = fields["area_ha"]
    assert (area.kind, area.minimum, area.maximum) == ("number", 0.1, 500)
    assert area.label == "Area Ha" and area.hint == "Sown area; allowed 0.1 to 500"
    rain = fields["rain_mm"]
    assert (rain.kind, rain.label, rain.hint) == (
        "number",
        "Rain Mm (optional)",
        "allowed 0 to 3000",
    )
    assert fields["rows_planted"].kind == "integer" and fields["rows_planted"].hint == "at least 1"
    assert fields["soil"].kind == "text" and fields["soil"].choices == ("clay", "sand", "loam")
    assert fields["farm"].kind == "text" and fields["farm"].choices == ()
    assert fields["sown_on"].kind == "date"


def test_the_answer_numbers_come_from_the_response_schema(crop_openapi: dict[str, Any]) -> None:
    answers = answer_fields(crop_openapi, INFO)

    assert [(a.name, a.unit) for a in answers] == [("yield_t_per_ha", "t/ha"), ("total_t", "t")]
    prediction = {"yield_t_per_ha": 7.25, "total_t": 1450.0, "warnings": ["soil 'peat' unseen"]}
    assert answer_markdown(answers, prediction) == (
        "**Yield T Per Ha:** 7.25 t/ha\n\n**Total T:** 1,450 t"
    )
    assert warnings_markdown(prediction) == "⚠️ soil 'peat' unseen"
    assert warnings_markdown({"warnings": []}) == ""


def test_rows_per_request_is_info_max_rows_else_the_bodys_max_items(
    crop_openapi: dict[str, Any],
) -> None:
    assert rows_per_request(crop_openapi, {"details": {"max_rows": 7}}) == 7
    assert rows_per_request(crop_openapi, INFO) == 50


def test_form_values_become_a_json_row_and_empty_fields_are_left_out(
    crop_openapi: dict[str, Any],
) -> None:
    fields = request_fields(crop_openapi)
    row = row_from_values(fields, ["12.5", "", "peat", "4711", "2024-04-01", "30"])

    assert row == {
        "area_ha": 12.5,
        "soil": "peat",
        "farm": "4711",
        "sown_on": "2024-04-01",
        "rows_planted": 30,
    }
    # not a number: sent as typed, so the server's own sentence names the field
    assert row_from_values(fields, ["big", None, None, "1", None, None])["area_ha"] == "big"


def test_a_schema_without_rows_is_a_sentence() -> None:
    app = FastAPI()

    @app.post("/predict")
    def predict(body: list[float]) -> Any:
        raise NotImplementedError

    with pytest.raises(SchemaError, match="does not take rows of named fields"):
        request_fields(app.openapi())
    with pytest.raises(SchemaError, match="takes no JSON body"):
        request_fields({"paths": {}})


def test_a_batch_keeps_every_column_and_row_and_names_refused_rows(
    crop_openapi: dict[str, Any],
) -> None:
    fields = request_fields(crop_openapi)
    table = read_table(
        b"plot_id,area_ha,farm,sown_on,soil\n"
        b"a,2,F1,2024-04-01,clay\n"
        b"b,900,F1,2024-04-02,\n"
        b"c,3.5,F2,2024-04-03,sand\n"
    )
    assert request_row(fields, table.rows[1]) == {
        "area_ha": 900.0,
        "farm": "F1",
        "sown_on": "2024-04-02",
    }
    result = BatchResult(
        predictions=[
            {"yield_t_per_ha": 7.0, "total_t": 14.0, "warnings": []},
            None,
            {"yield_t_per_ha": 6.5, "total_t": 22.75, "warnings": ["farm 'F2' unseen"]},
        ],
        refusals={1: "Area_ha: Input should be less than or equal to 500."},
    )
    out = list(
        csv.reader(io.StringIO(result_csv(table, answer_fields(crop_openapi, INFO), result)))
    )

    assert out[0] == [*table.columns, "yield_t_per_ha", "total_t", "warnings", "error"]
    assert out[1] == ["a", "2", "F1", "2024-04-01", "clay", "7.0", "14.0", "", ""]
    assert out[2][-1] == "Area_ha: Input should be less than or equal to 500." and out[2][5] == ""
    assert out[3][5:8] == ["6.5", "22.75", "farm 'F2' unseen"]
    assert result.summary() == (
        "Valued 2 of 3 rows. The server refused 1:\n"
        "- row 2 (line 3): Area_ha: Input should be less than or equal to 500."
    )


def test_an_input_column_named_like_a_prediction_keeps_its_values(
    crop_openapi: dict[str, Any],
) -> None:
    table = read_table(b"area_ha,farm,sown_on,yield_t_per_ha\n2,F1,2024-04-01,6.9\n")
    result = BatchResult(predictions=[{"yield_t_per_ha": 7.0, "total_t": 14.0}])
    out = list(
        csv.reader(io.StringIO(result_csv(table, answer_fields(crop_openapi, INFO), result)))
    )

    assert out[0][3:6] == ["yield_t_per_ha", "predicted_yield_t_per_ha", "total_t"]
    assert out[1][3:6] == ["6.9", "7.0", "14.0"]


def test_a_semicolon_separated_csv_is_read_too() -> None:
    table = read_table(b"area_ha;farm\n2;F1\n")
    assert (table.columns, table.rows) == (["area_ha", "farm"], [{"area_ha": "2", "farm": "F1"}])


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        (b"", "The file is empty"),
        (b"\xff\xfe\x00a", "not UTF-8"),
        (b"a,b\n", "a header but no rows"),
        (b"a,a\n1,2\n", "names a column twice"),
        (b"a,b\n1,2\n3\n", "Line 3 has 1 cells, the header has 2 columns"),
    ],
)
def test_a_file_that_is_no_table_is_a_sentence(content: bytes, sentence: str) -> None:
    with pytest.raises(BatchError, match=sentence):
        read_table(content)


def test_a_missing_required_column_is_named_before_any_request(
    crop_openapi: dict[str, Any],
) -> None:
    table = read_table(b"area_ha,sown_on\n2,2024-04-01\n")
    with pytest.raises(BatchError, match="lacks the required column\\(s\\) farm;"):
        check_columns(request_fields(crop_openapi), table)


def built_page(openapi: dict[str, Any]) -> dict[str, Any]:
    """The tabular page built for ``openapi`` (against an address where no server answers, so
    ``/examples`` cannot be read): its components by ``elem_id``."""
    import gradio as gr

    from modelyard.serving.server_process import HOST, free_port
    from modelyard.webui.tabular_view import build

    client = ServerClient(f"http://{HOST}:{free_port()}")
    with gr.Blocks() as blocks:
        build(ViewContext(client=client, info=INFO, _openapi=openapi))
    client.close()
    return {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}


def test_the_page_of_a_non_avm_table_is_built_from_its_schema(
    crop_openapi: dict[str, Any],
) -> None:
    import gradio as gr

    page = built_page(crop_openapi)

    assert isinstance(page["tabular-field-soil"], gr.Dropdown)
    assert page["tabular-field-soil"].allow_custom_value is True
    assert isinstance(page["tabular-field-sown_on"], gr.DateTime)
    assert isinstance(page["tabular-field-area_ha"], gr.Textbox)  # 0 is no "empty" number
    assert page["tabular-field-rain_mm"].label == "Rain Mm (optional)"
    assert page["tabular-field-area_ha"].info == "Sown area; allowed 0.1 to 500"
    assert page["tabular-example"].visible is False  # no /examples to read
    assert "Rows go to the server 50 at a time" in page["tabular-batch-intro"].value


def test_a_schema_without_a_form_is_a_sentence_on_the_page() -> None:
    page = built_page({"paths": {}})

    assert "tabular-submit" not in page
    assert page["tabular-error"].value == (
        "**This server's schema gives no form:** the server's POST /predict takes no JSON body"
    )
