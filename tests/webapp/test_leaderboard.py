"""Leaderboard page: one table of runs, groups and ensembles, metric columns, flag, scatter, filters."""

from __future__ import annotations

import json

from webapp.components.tables import METRIC_COLUMNS


def _table(at):
    return next(t.value for t in at.dataframe if "public↑ val↓" in t.value.columns)


def _charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_rows_columns_and_flag(seeded, ui):
    at = ui.open_page("leaderboard", actor=seeded["ada"])
    ui.no_exceptions(at)
    table = _table(at)
    # 4 finished runs + 1 two-fold group + 1 ensemble (the running run is not on the board)
    assert len(table) == 6
    assert sorted(table["kind"].unique()) == ["ensemble", "group", "run"]
    for col in (*METRIC_COLUMNS, "public", "gap", "OOF", "mean ± std"):
        assert col in table.columns
    group = table[table["kind"] == "group"].iloc[0]
    assert group["runs"] == 2
    assert abs(group["miou"] - 0.72) < 1e-9  # mean of 0.70 and 0.74
    assert "±" in group["mean ± std"]
    ens = table[table["kind"] == "ensemble"].iloc[0]
    assert table.iloc[0]["name"] == ens["name"]  # best validation score first
    linknet = table[table["name"] == "linknet"].iloc[0]
    assert linknet["public↑ val↓"]
    assert abs(linknet["gap"] - (0.73 - 0.66)) < 1e-9
    assert any("Public score rose while validation fell" in w.value for w in at.warning)
    assert table[table["name"] == "fpn"].iloc[0]["detail"] == f"./run?run={seeded['fpn_run']}"


def test_identity_never_comes_from_the_url(seeded, ui):
    # links carry page state only; an ``as`` parameter (the old way to pick a member) is ignored
    at = ui.app()
    at.query_params["as"] = str(seeded["bob"])
    at.run()
    picker = next(s for s in at.sidebar.selectbox if s.label == "Acting as")
    assert picker.value == seeded["ada"] and picker.index == 0
    at.switch_page("app_pages/leaderboard.py")
    at.run()
    ui.no_exceptions(at)
    links = [*_table(at)["inspect"], *_table(at)["detail"]]
    assert links and not any("as=" in str(url) for url in links)


def test_scatter_reports_correlations_per_metric(seeded, ui):
    at = ui.open_page("leaderboard", actor=seeded["ada"])
    corr = next(t.value for t in at.dataframe if "spearman" in t.value.columns)
    assert list(corr["metric"]) == list(METRIC_COLUMNS)
    row = corr[corr["metric"] == "miou"].iloc[0]
    assert row["n"] == 4
    import scipy.stats

    vals, pubs = [0.70, 0.74, 0.78, 0.66], [0.69, 0.75, 0.72, 0.73]
    assert abs(row["pearson"] - scipy.stats.pearsonr(vals, pubs).statistic) < 1e-9
    assert abs(row["spearman"] - scipy.stats.spearmanr(vals, pubs).statistic) < 1e-9
    scatter_of = next(w for w in at.get("button_group") if w.label == "Scatter of")
    scatter_of.set_value("miou")
    at.run()
    specs = _charts(at)
    miou = next(s for s in specs if s["layout"]["title"]["text"].startswith("miou:"))
    assert f"Pearson {row['pearson']:.3f}" in miou["layout"]["title"]["text"]
    names = [tr.get("name") for tr in miou["data"]]
    assert "fit" in names
    points = sum(len(tr["x"]) for tr in miou["data"] if tr.get("name") != "fit")
    assert points == 4


def test_filters_by_owner_architecture_and_tag(seeded, ui):
    at = ui.open_page("leaderboard", actor=seeded["ada"])
    owner = next(s for s in at.selectbox if s.label == "Owner")
    owner.set_value(seeded["bob"]).run()
    assert set(_table(at)["name"]) == {"fpn", "linknet"}
    owner.set_value(None).run()
    next(s for s in at.selectbox if s.label == "Architecture").set_value("FPN").run()
    assert list(_table(at)["name"]) == ["fpn"]
    next(s for s in at.selectbox if s.label == "Architecture").set_value(None).run()
    tag = next(s for s in at.selectbox if s.label == "Tag")
    assert "baseline" in tag.options  # the tags runs carry, not free text
    tag.set_value("baseline").run()
    table = _table(at)
    assert set(table["kind"]) == {"run", "group"} and len(table) == 3


def test_rows_are_paged(seeded, ui):
    at = ui.open_page("leaderboard", actor=seeded["ada"])
    everything = list(_table(at)["name"])
    assert len(everything) > 2
    next(s for s in at.selectbox if s.label == "Rows per page").set_value(50).run()
    assert any(c.value.startswith(f"Rows 1-{len(everything)} (the last)") for c in at.caption)
    page = next(n for n in at.number_input if n.label == "Page")
    page.set_value(2).run()
    ui.no_exceptions(at)
    assert any("No rows on this page" in i.value for i in at.info)


def test_selection_opens_the_ensemble_builder(seeded, ui):
    at = ui.open_page("leaderboard", actor=seeded["ada"])
    picker = next(m for m in at.multiselect if m.label.startswith("Selected rows"))
    picker.set_value([f"run:{seeded['fpn_run']}", f"run:{seeded['fold_runs'][1]}"]).run()
    next(b for b in at.button if b.label.startswith("Build an ensemble")).click().run()
    ui.no_exceptions(at)
    assert at.title[0].value == "Ensemble builder"
    members = next(m for m in at.multiselect if m.label.startswith("Members"))
    assert members.value == [f"run:{seeded['fpn_run']}", f"run:{seeded['fold_runs'][1]}"]


def test_empty_database(env, ui):
    at = ui.open_page("leaderboard")
    ui.no_exceptions(at)
    assert any("No runs yet" in i.value for i in at.info)


def test_rows_say_which_images_they_were_validated_on(seeded, ui):
    at = ui.open_page("leaderboard", actor=seeded["ada"])
    ui.no_exceptions(at)
    table = next(df.value for df in at.dataframe if "validated on" in df.value.columns)
    on = dict(zip(zip(table["kind"], table["id"]), table["validated on"]))
    fold_runs = seeded["fold_runs"]
    assert on[("run", fold_runs[0])] == "fold 1 of 2" and on[("run", fold_runs[1])] == "fold 2 of 2"
    assert on[("run", seeded["fpn_run"])] == "hold-out"
    assert on[("group", seeded["fold_group"])] in ("out-of-fold", "mean of its runs")
    assert any("Fold runs are scored on one fold's images" in w.value for w in at.warning)


def test_the_selected_runs_curves_are_overlaid(seeded, ui):
    at = ui.open_page("leaderboard", actor=seeded["ada"])
    picked = [f"run:{r}" for r in seeded["fold_runs"]]
    next(m for m in at.multiselect if m.label.startswith("Selected rows")).set_value(picked).run()
    ui.no_exceptions(at)
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Validation miou per epoch"))
    assert len(spec["data"]) == 2 and all(len(tr["x"]) == 3 for tr in spec["data"])
