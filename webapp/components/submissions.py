"""A source's test predictions and submissions: predict (queued, with a TTA policy), write a submission
file from the stored test predictions (queued), and record the public scores a member reads off the
competition site (several submissions per run, group or ensemble).

The worker's jobs do one thing each: ``predict`` stores a run's test probabilities, ``ensemble``
combines its members' stored test probabilities, ``submission`` writes the file from a stored
test store. The page therefore offers the next step that can run now, and says what it waits for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from webapp import resources, state
from webapp.components.downloads import file_picker
from webapp.components.forms import SUBMISSION_FORMATS, tta_input
from webapp.components.layout import fmt_time
from webapp.errors import guard

__all__ = ["render_submissions", "store_tta"]


def _k(name: str) -> str:
    return state.widget_key("submissions", name)


def _prefix(source: dict) -> str:
    kind, value = next(iter(source.items()))
    return f"{kind}{value}"


def store_tta(path: str | None) -> tuple[bool, Any]:
    """Whether a probability store can be read at ``path``, and the TTA policy recorded in it."""
    from worker.services.probabilities import store_tta as read_tta

    return read_tta(resources.artifacts(), path)


def _queue(kind: str, target: dict, params: dict, done: str) -> None:
    from worker.services import jobs

    with guard("Queueing the job") as outcome:
        job, problem = resources.submit(jobs.create_job, kind=kind, target=target, params=params,
                                        queued=lambda j: resources.Queued(job_ids=(j.id,)))
    if outcome.failed:
        return
    state.flash(f"{done} (job {job.id}).")
    if problem:
        state.flash(problem, "warning")
    st.rerun()


def _test_predictions(source: dict, test_store: str | None, p: str) -> bool:
    """Draw the test-prediction step; return whether a test store is ready for a submission."""
    from worker.services import submissions

    ready, tta = store_tta(test_store)
    kind, object_id = next(iter(source.items()))
    status = resources.read(submissions.pending_test_predictions, kind=kind.removesuffix("_id"), id=object_id)
    pending = status.pending
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
        missing_runs = status.missing_runs
        missing_other = [f"group {i}" for i in status.missing_groups] + [f"ensemble {i}" for i in
                                                                         status.missing_ensembles]
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
        source = {"ensemble_id": int(ensemble_id)}  # type: ignore[arg-type]  # one of the three ids is set
    p = _prefix(source)
    subs = resources.read(submissions.list_submissions, **source)
    if subs:
        st.dataframe(
            pd.DataFrame([{"submission": s.id, "format": s.format, "tta": "none" if not s.tta else str(s.tta),
                           "status": s.status.value, "error": s.error_message or "",
                           "file": s.file_path or ("(being written)" if not s.status.is_terminal else ""),
                           "public score": s.public_score,
                           "entered by": names.get(s.score_entered_by, "") if s.public_score is not None else "",
                           "score note": s.score_note or "", "note": s.note,
                           "created": fmt_time(s.created_at)} for s in subs]),
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

                def create(session: Any, actor: int | None) -> tuple[Any, Any]:
                    sub = submissions.create_submission(session, actor=actor, format=fmt, tta=tta, note=note,
                                                        **source)
                    return sub, jobs.create_job(session, actor=actor, kind="submission",
                                                target={"submission_id": sub.id}, params={})

                with guard("Queueing the submission") as outcome:
                    (sub, job), problem = resources.submit_unit(
                        create, queued=lambda r: resources.Queued(job_ids=(r[1].id,)))
                if not outcome.failed:
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
        note = st.text_input("Note on the score (optional)", key=_k(f"{p}.score_note"),
                             help="Kept with the score; the submission's own note stays as it is.")
        if st.form_submit_button("Save score", disabled=not subs):
            with guard("Saving the score") as outcome:
                if sub_id is None:
                    raise ValueError("pick a submission")
                saved = resources.write(submissions.record_public_score, submission_id=int(sub_id), score=score,
                                        note=note or None)
            if not outcome.failed:
                state.flash(f"Public score {saved.public_score:.4f} saved for submission {saved.id}.")
                st.rerun()
    written = {f"submission {s.id} ({Path(s.file_path).name})": f"submissions/{s.id}/file" for s in subs
               if s.file_path}
    if written:  # the submission files, through the dashboard's one download picker
        file_picker([], written, key=_k(f"{p}.file"))
