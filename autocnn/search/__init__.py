"""Search engines. The local engine lives here; the Ray Tune backend plugs into the same pieces."""
from autocnn.search.config import SearchConfig
from autocnn.search.engine import (PRUNERS, SAMPLERS, StudyError, TrialContext, evaluate_trial, load_study,
                                   resume_search, run_search, stored_config)

__all__ = ["PRUNERS", "SAMPLERS", "SearchConfig", "StudyError", "TrialContext", "evaluate_trial", "load_study",
           "resume_search", "run_search", "stored_config"]
