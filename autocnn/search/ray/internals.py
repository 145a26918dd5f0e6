"""Where autocnn reaches into Ray Tune's `OptunaSearch` past its public API, each access naming what is missing.

`OptunaSearch` keeps the Optuna study, the asked Optuna trial of each Tune trial and the set of told
trials as private attributes and offers no accessor; `AutocnnSearch` (searcher.py) needs them to record
what workers report on the same Optuna trial and to tell its real final state. The PBT subclass's
private hooks live with it in pbt.py, the other module on Tune's private API.
"""
from __future__ import annotations

import optuna


def searched_study(searcher) -> optuna.Study:
    """The study `OptunaSearch` asks and tells (`_ot_study`; no public accessor)."""
    return searcher._ot_study


def asked_trials(searcher) -> dict[str, optuna.Trial]:
    """Tune trial id -> the Optuna trial asked for it (`_ot_trials`; no public accessor)."""
    return searcher._ot_trials


def told_trials(searcher) -> set[str]:
    """Tune trial ids already told to the study (`_completed_trials`; no public accessor)."""
    return searcher._completed_trials


def searched_study_name(searcher) -> str:
    """The study's name as `OptunaSearch` was given it (`_study_name`; no public accessor)."""
    return searcher._study_name
