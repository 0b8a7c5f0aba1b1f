"""The old name of the fine-tuned classifier's folder: :mod:`ctinit.models.classifier_folder` writes it and
:mod:`ctinit.trained_model` reads it back. Kept for one release so that ``from ctinit.finetuned import ...`` works;
import from those modules instead."""
from .hubio.names import CARD_NAME, PREPROCESSOR_NAME
from .models.classifier_folder import (MODEL_FILES, check_model_out_dir, check_out_dir, image_processor, own_out_dir,
                                       save_finetuned, type_name, write_model_folder)
from .models.conversion import to_transformers
from .trained_model import load_classifier, read_processor_settings, resolve_model

__all__ = ["CARD_NAME", "MODEL_FILES", "PREPROCESSOR_NAME", "check_model_out_dir", "check_out_dir", "image_processor",
           "load_classifier", "own_out_dir", "read_processor_settings", "resolve_model", "save_finetuned", "to_transformers",
           "type_name", "write_model_folder"]
