"""`import autocnn` loads only the genotype; its public functions load the layers on first use."""
import importlib

import pytest

import autocnn


def test_public_functions_resolve_lazily_and_export_stays_a_function():
    importlib.import_module("autocnn.export.writer")  # binds the subpackage on the root if nothing stops it
    assert callable(autocnn.export) and autocnn.export.__module__ == "autocnn.export.trials"
    assert autocnn.create_model.__module__ == autocnn.list_models.__module__ == "autocnn.api"
    from autocnn import create_model, export

    assert (create_model, export) == (autocnn.create_model, autocnn.export)
    assert set(autocnn.__all__) <= set(dir(autocnn))


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        autocnn.no_such_thing
