"""Compatibility import path: models registered before the restructure (bundle format 1) carry a
pyfunc file that imports `kickvision.bundle.load_bundle`. Keep this module so those champions still
load (and can be compared against) in a process that runs this version. New code imports
`kickvision.model.bundle`."""

from kickvision.model.bundle import ModelBundle, load_bundle, save_bundle

__all__ = ["ModelBundle", "load_bundle", "save_bundle"]
