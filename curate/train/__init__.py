"""Training: the progressive StyleGAN run loop over pack's records, and generate.

Importing this package does not import TensorFlow; the functions that need it import it when called.
"""

from curate.train.data import DatasetInfo, open_dataset
from curate.train.generate import generate_images
from curate.train.run import resume_config, run_training, summary_line
from curate.train.runfolder import TrainError
from curate.train.steps import Trainer

__all__ = ["DatasetInfo", "TrainError", "Trainer", "generate_images", "open_dataset", "resume_config",
           "run_training", "summary_line"]
