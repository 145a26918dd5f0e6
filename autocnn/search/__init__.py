"""Architecture search: one driver (`driver`) over a local or a Ray Tune backend, sharing the trial steps (`engine`)."""
from autocnn.search.config import SearchConfig
from autocnn.search.driver import Backend, resume_search, run_search
from autocnn.search.engine import PRUNERS, SAMPLERS, StudyError, TrialContext, evaluate_trial, load_study, stored_config

__all__ = ["PRUNERS", "SAMPLERS", "Backend", "SearchConfig", "StudyError", "TrialContext", "evaluate_trial",
           "load_study", "resume_search", "run_search", "stored_config"]
