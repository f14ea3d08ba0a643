"""A source's test predictions and submissions: predict (queued, with a TTA policy), write a submission
file from the stored test predictions (queued), and record the public scores a member reads off the
competition site (several submissions per run, group or ensemble).

The worker's jobs do one thing each: ``predict`` stores a run's test probabilities, ``ensemble``
combines its members' stored test probabilities, ``submission`` writes the file from a stored
test store. The page therefore offers the next step that can run now, and says what it waits for.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from webapp import resources, state
from webapp.components.forms import SUBMISSION_FORMATS, tta_input
from webapp.components.layout import fmt_time
from webapp.errors import guard

__all__ = ["render_submissions", "store_tta", "pending_jobs"]


def _k(name: str) -> str:
    return state.widget_key("submissions", name)


def _prefix(source: dict) -> str:
    kind, value = next(iter(source.items()))
    return f"{kind}{value}"


def store_tta(path: str | None) -> tuple[bool, Any]:
    """Whether a probability store can be read at ``path``, and the TTA policy recorded in it."""
    if not path:
        return False, None
    from segcore.errors import StoreError
    from segcore.inference.store import ProbabilityStore

    from worker.artifacts import ArtifactError, is_url

    try:
        if is_url(path):  # opening reads only the manifest: fetch just that file
            local = resources.artifacts().fetch(path.rstrip("/") + "/manifest.json").parent
        else:
            local = resources.artifacts().fetch(path)
        return True, ProbabilityStore.open(local).tta
    except (StoreError, OSError, ArtifactError):
        return False, None


def pending_jobs(jobs: list, *, run_ids: set[int] = frozenset(), ensemble_id: int | None = None) -> list:
    """Queued or running predict/ensemble jobs that will produce test predictions for these sources."""
    out = []
    for j in jobs:
        if j.status.value not in ("queued", "running"):
            continue
        if j.kind.value == "predict" and j.params.get("split", "test") == "test" and \
                run_ids & set(j.target.get("run_ids") or []):
            out.append(j)
        elif j.kind.value == "ensemble" and ensemble_id is not None and j.target.get("ensemble_id") == ensemble_id:
            out.append(j)
    return out


def _queue(kind: str, target: dict, params: dict, done: str) -> None:
    from worker.services import jobs

    with guard("Queueing the job") as outcome:
        job = resources.write(jobs.create_job, kind=kind, target=target, params=params)
    if outcome.failed:
        return
    problem = resources.publish(job_ids=[job.id])
    state.flash(f"{done} (job {job.id}).")
    if problem:
        state.flash(problem, "warning")
    st.rerun()


def _member_stores(ensemble: Any) -> tuple[list[int], list[str]]:
    """Run members without test predictions, and other members (groups) without them."""
    from worker.services import groups, runs

    missing_runs, missing_other = [], []
    for m in ensemble.members:
        if m.kind.value == "run":
            if not resources.read(runs.get_run, run_id=m.id).test_store:
                missing_runs.append(m.id)
        elif m.kind.value == "group":
            if not resources.read(groups.get_group, group_id=m.id).test_store:
                missing_other.append(f"group {m.id}")
        else:
            missing_other.append(f"ensemble {m.id}")
    return missing_runs, missing_other


def _test_predictions(source: dict, test_store: str | None, p: str) -> bool:
    """Draw the test-prediction step; return whether a test store is ready for a submission."""
    from worker.services import ensembles

    ready, tta = store_tta(test_store)
    all_jobs = resources.jobs(limit=200)
    if "run_id" in source:
        pending = pending_jobs(all_jobs, run_ids={source["run_id"]})
    elif "ensemble_id" in source:
        ens = resources.read(ensembles.get_ensemble, ensemble_id=source["ensemble_id"])
        member_runs = {m.id for m in ens.members if m.kind.value == "run"}
        pending = pending_jobs(all_jobs, run_ids=member_runs, ensemble_id=ens.id)
    else:
        pending = []
    if ready:
        st.success(f"Test predictions stored (TTA: {tta or 'none'}).", icon=":material/check_circle:")
    elif pending:
        st.info("Test predictions are being made: " + ", ".join(f"job {j.id} ({j.kind.value}, {j.status.value})"
                                                              for j in pending) + ". Reload when it finished.")
    if "run_id" in source:
        with st.form(_k(f"{p}.predict")):
            st.markdown("**Predict the test images**" + (" again" if ready else "") + " (queued on a worker)")
            policy = tta_input(_k(f"{p}.tta"))
            if st.form_submit_button("Queue test prediction"):
                _queue("predict", {"run_ids": [source["run_id"]]}, {"split": "test", "tta": policy},
                       f"Test prediction of run {source['run_id']} queued")
    elif "ensemble_id" in source and not ready:
        missing_runs, missing_other = _member_stores(ens)
        if missing_other:
            st.warning(f"{', '.join(missing_other)} have no test predictions; predict their runs (or build the "
                       "ensemble from runs) first.")
        elif missing_runs:
            with st.form(_k(f"{p}.predict_members")):
                st.markdown(f"**Predict the test images of runs {', '.join(map(str, missing_runs))}** first")
                policy = tta_input(_k(f"{p}.members_tta"))
                if st.form_submit_button("Queue their test predictions"):
                    _queue("predict", {"run_ids": missing_runs}, {"split": "test", "tta": policy},
                           "Test predictions of the members queued")
        elif st.button("Combine the members' test predictions", key=_k(f"{p}.combine")):
            _queue("ensemble", {"ensemble_id": source["ensemble_id"]}, {},
                   f"Ensemble {source['ensemble_id']}'s test prediction queued")
    elif "group_id" in source:
        with st.form(_k(f"{p}.predict_group")):
            st.markdown("**Predict the test images** with every finished run of the group" + (" again" if ready else "")
                        + "; the group's test probabilities are their mean (queued on a worker)")
            policy = tta_input(_k(f"{p}.group_tta"))
            if st.form_submit_button("Queue the group's test prediction"):
                _queue("predict", {"group_ids": [source["group_id"]]}, {"split": "test", "tta": policy},
                       f"Test prediction of group {source['group_id']} queued")
    return ready


def render_submissions(
    *, run_id: int | None = None, group_id: int | None = None, ensemble_id: int | None = None,
    test_store: str | None = None, names: dict,
) -> None:
    """The test predictions and submissions of one run, group or ensemble, with the forms for the next steps.

    Args:
        run_id, group_id, ensemble_id: The source (exactly one).
        test_store: The source's stored test predictions, if any.
        names: Member id -> name.
    """
    from worker.services import jobs, submissions

    if run_id is not None:
        source: dict[str, int] = {"run_id": run_id}
    elif group_id is not None:
        source = {"group_id": group_id}
    else:
        source = {"ensemble_id": int(ensemble_id)}  # type: ignore[arg-type]
    p = _prefix(source)
    subs = resources.read(submissions.list_submissions, **source)
    if subs:
        st.dataframe(
            pd.DataFrame([{"submission": s.id, "format": s.format, "tta": "none" if not s.tta else str(s.tta),
                           "file": s.file_path or "(being written)", "public score": s.public_score,
                           "entered by": names.get(s.score_entered_by, "") if s.public_score is not None else "",
                           "note": s.note, "created": fmt_time(s.created_at)} for s in subs]),
            hide_index=True, width="stretch", key=_k(f"{p}.subs"),
            column_config={"public score": st.column_config.NumberColumn(format="%.4f")},
        )
    else:
        st.caption("No submission yet.")
    left, right = st.columns(2)
    with left:
        ready = _test_predictions(source, test_store, p)
        with st.form(_k(f"{p}.make_submission")):
            st.markdown("**Make a submission file** from the stored test predictions (queued)")
            fmt = st.selectbox("Format", list(SUBMISSION_FORMATS), key=_k(f"{p}.format"),
                               format_func=lambda f: f"{f}: {SUBMISSION_FORMATS[f]}")
            note = st.text_input("Note", key=_k(f"{p}.sub_note"))
            if st.form_submit_button("Queue submission", disabled=not ready):
                _, tta = store_tta(test_store)
                with guard("Queueing the submission") as outcome, resources.unit_of_work() as (session, actor):
                    sub = submissions.create_submission(session, actor=actor, format=fmt, tta=tta, note=note,
                                                        **source)
                    job = jobs.create_job(session, actor=actor, kind="submission",
                                          target={"submission_id": sub.id}, params={})
                if not outcome.failed:
                    problem = resources.publish(job_ids=[job.id])
                    state.flash(f"Submission {sub.id} queued as job {job.id}.")
                    if problem:
                        state.flash(problem, "warning")
                    st.rerun()
    with right, st.form(_k(f"{p}.record_score")):
        st.markdown("**Record a public leaderboard score**")
        if not subs:
            st.caption("Make a submission first; enter its score once the competition site has scored it.")
        # the key follows the list, so a new submission is offered (and preselected) at once
        ids = [s.id for s in subs]
        sub_id = st.selectbox("Submission", ids, index=0 if ids else None,
                              key=_k(f"{p}.score_sub.{'-'.join(map(str, ids))}"),
                              format_func=lambda i: f"submission {i}")
        score = st.text_input("Public score", key=_k(f"{p}.score"), placeholder="e.g. 0.8123")
        note = st.text_input("Note (optional)", key=_k(f"{p}.score_note"))
        if st.form_submit_button("Save score", disabled=not subs):
            with guard("Saving the score") as outcome:
                if sub_id is None:
                    raise ValueError("pick a submission")
                saved = resources.write(submissions.record_public_score, submission_id=int(sub_id), score=score,
                                        note=note or None)
            if not outcome.failed:
                state.flash(f"Public score {saved.public_score:.4f} saved for submission {saved.id}.")
                st.rerun()
