"""Model registry: a new model is one file plus one line here."""
from lib.errors import UserError
from lib.models.skipganomaly import SkipGANomaly
from lib.models.w_skipganomaly import WSkipGANomaly

MODELS = {m.name: m for m in (SkipGANomaly, WSkipGANomaly)}


def build_model(opt, device):
    """The model named by `opt.model`, on `device`."""
    if opt.model not in MODELS:
        raise UserError(f"unknown model '{opt.model}'; choose one of: {', '.join(MODELS)}")
    return MODELS[opt.model](opt, device)
