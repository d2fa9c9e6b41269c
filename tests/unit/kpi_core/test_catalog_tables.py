"""The catalog's text tables (stored components, lifetime counters): what a row declares, and
the error a malformed row gives at import, naming the table and echoing the row."""

from __future__ import annotations

import pytest

from kpi_core import catalog
from kpi_core.catalog import COUNT, LIFETIME, SECONDS, CatalogError, Component


def test_a_components_row_declares_its_name_breakdown_events_and_doc() -> None:
    table = """
answered_late b call.answered call.ended
    Answered calls that waited more than 60 s.
rings         - call.ring_no_answer
    Agents rung who did not pick up.
"""
    assert list(catalog._stored(table)) == [
        Component(
            "answered_late",
            "Answered calls that waited more than 60 s.",
            ("call.answered", "call.ended"),
            broken_down=True,
        ),
        Component("rings", "Agents rung who did not pick up.", ("call.ring_no_answer",)),
    ]
    assert catalog.COMPONENTS["offered"] == Component(
        "offered", "Inbound calls offered (at the offer's ts).", ("call.offered",), broken_down=True
    )


def test_a_counters_row_declares_a_lifetime_counter() -> None:
    kpis = list(
        catalog._counters("""
ccmon_x_total   offered
    Xs.
ccmon_y_seconds_total handle_sum seconds
    Ys.
""")
    )
    assert [(k.name, k.help, k.unit, k.kind, k.span, k.components) for k in kpis] == [
        ("ccmon_x_total", "Xs.", COUNT, "counter", LIFETIME, ("offered",)),
        ("ccmon_y_seconds_total", "Ys.", SECONDS, "counter", LIFETIME, ("handle_sum",)),
    ]
    assert catalog.get("calls_offered_total").help == "Inbound calls offered."


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            "offered b call.offered\nInbound calls offered.",
            "line 1: expected a head line, then its description "
            "indented by 4 spaces; got 'offered b call.offered', then 'Inbound calls offered.'",
        ),
        (
            "offered b call.offered",
            "line 1: expected a head line, then its description indented by 4 spaces; "
            "got 'offered b call.offered', then ''",
        ),
        (
            "offered x call.offered\n    Doc.",
            "KPI catalog entry 'offered', components: expected `name b|- event...`, got 'offered x call.offered'",
        ),
        ("offered b\n    Doc.", "expected `name b|- event...`, got 'offered b'"),
    ],
)
def test_a_malformed_components_row_fails_naming_it(table: str, message: str) -> None:
    with pytest.raises(CatalogError) as caught:
        list(catalog._stored(table))
    assert message in str(caught.value)


def test_a_malformed_counters_row_fails_naming_it() -> None:
    with pytest.raises(
        CatalogError,
        match=r"'ccmon_x_total', counters: expected `name component \[unit\]`, "
        r"got 'ccmon_x_total'",
    ):
        list(catalog._counters("ccmon_x_total\n    Xs."))


def test_a_kpi_by_parts_reads_through_its_parts() -> None:
    fcr = catalog.get("first_contact_resolution_ratio")
    assert [label for label, _fold in fcr.parts] == ["voice", "ticket"]
    assert fcr.components == ("fcr_ok", "fcr_n", "tfcr_ok", "tfcr_n")
    assert [fold({"fcr_ok": 3.0, "fcr_n": 4.0, "tfcr_n": 0.0}) for _label, fold in fcr.parts] == [0.75, None]
    sneaky = catalog.Kpi(
        "ccmon_x_ratio",
        "X.",
        catalog.RATIO,
        labels=(*catalog.QUEUE_WINDOW, "channel"),
        parts=(("voice", catalog.fold(lambda c: c.get("fcr_ok", 0.0) + c.get("fcr_n", 0.0), "fcr_ok")),),
    )
    with pytest.raises(
        CatalogError,
        match=r"'ccmon_x_ratio', parts: 'voice' reads \['fcr_n', 'fcr_ok'\] but "
        r"declares \['fcr_ok'\]",
    ):
        catalog.validate([sneaky])
    both = catalog.Kpi(
        "ccmon_y_ratio", "Y.", catalog.RATIO, reads=("fcr_n",), parts=(("voice", catalog.mean("fcr_ok", "fcr_n")),)
    )
    with pytest.raises(CatalogError, match="'ccmon_y_ratio', parts: a KPI by parts declares neither value nor reads"):
        catalog.validate([both])
