"""Retrieval networks: create by name, frozen teachers, checkpoints."""

from asymret.models.checkpoint import import_reference_checkpoint, load_model, save_model
from asymret.models.complexity import count_flops, count_parameters, model_complexity
from asymret.models.frozen_trunk import ActivationCache
from asymret.models.network import ModelConfig, RetrievalNet, Teacher
from asymret.models.pooling import GeM
from asymret.models.pretrained import load_lite_classifier
from asymret.models.registry import (
    OFFLINE_PRETRAINED,
    create_model,
    list_models,
    load_network,
    parse_model_name,
    register_offline_weights,
)
from asymret.models.state import read_state_dict

__all__ = [
    "OFFLINE_PRETRAINED",
    "ActivationCache",
    "GeM",
    "ModelConfig",
    "RetrievalNet",
    "Teacher",
    "count_flops",
    "count_parameters",
    "create_model",
    "import_reference_checkpoint",
    "list_models",
    "load_lite_classifier",
    "load_model",
    "load_network",
    "model_complexity",
    "parse_model_name",
    "read_state_dict",
    "register_offline_weights",
    "save_model",
]
