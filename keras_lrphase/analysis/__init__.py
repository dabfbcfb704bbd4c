"""Representation analysis: CCA, SVCCA and layer-similarity heatmaps.

The tools of Section 2.2 of Gotmare et al. (2019) ("A Closer Look at Deep
Learning Heuristics"), after Raghu et al. (2017):

* `cca`, `svcca`: canonical correlations / SVCCA similarity of two activation
  matrices (NumPy only);
* `layer_similarity`: the matrix of SVCCA similarities between the layers of
  two Keras models on the same inputs;
* `plot_layer_similarity`: that matrix (or the difference of two) as a
  heatmap;
* `fit_curve`, `linear_path`: low-loss curves (quadratic Bezier or
  polychain) and the straight segment between two trained models (mode
  connectivity, Garipov et al. 2018; the Heuristics paper's Section 3);
* `loss_plane`, `plot_loss_plane`: loss and accuracy on the plane through
  three weight vectors, with projected points;
* `recalibrate_batch_norm`: BatchNorm statistics recomputed on data;
* `normalized_margins`: Jiang et al.'s normalised margin of every sample
  (the two-phase paper's Appendix A.1);
* `plot_parameter_change`: the per-layer weight change logged by
  `ParameterChangeMonitor` against the epoch (the Learning Stages paper's
  Figures 4 and 11);
* `transfer_probe`: how well the models of successive learning stages
  transfer to another task, by a linear probe on their penultimate
  features (`fit_linear_probe`) or by fine-tuning (the Learning Stages
  paper's Section 5 and Table 2), as a `TransferTable`;
* `plot_hessian_density`, `plot_eigenvalue_trajectories`,
  `plot_layer_eigenvalues`: the Hessian spectrum (`keras_lrphase.hessian`,
  `HessianSpectrumMonitor`): densities, top eigenvalues against the epoch
  per layer, the largest eigenvalue of each layer;
* `plot_connection`, `plot_margins`, `plot_transfer`: the figures of
  `keras-lrphase analyze`.
"""

from keras_lrphase.analysis.batch_norm_statistics import recalibrate_batch_norm
from keras_lrphase.analysis.cca import cca
from keras_lrphase.analysis.cca import svcca
from keras_lrphase.analysis.layer_similarity import default_layers
from keras_lrphase.analysis.layer_similarity import layer_similarity
from keras_lrphase.analysis.loss_plane import LossPlane
from keras_lrphase.analysis.loss_plane import loss_plane
from keras_lrphase.analysis.loss_plane_plot import plot_loss_plane
from keras_lrphase.analysis.mode_connectivity import ConnectingCurve
from keras_lrphase.analysis.mode_connectivity import fit_curve
from keras_lrphase.analysis.mode_connectivity import linear_path
from keras_lrphase.analysis.margins import normalized_margins
from keras_lrphase.analysis.margins import quartile_statistics
from keras_lrphase.analysis.parameter_change_plot import plot_parameter_change
from keras_lrphase.analysis.similarity_plot import plot_layer_similarity
from keras_lrphase.analysis.curve_plot import plot_connection
from keras_lrphase.analysis.linear_probe import LinearProbe
from keras_lrphase.analysis.linear_probe import fit_linear_probe
from keras_lrphase.analysis.margin_plot import plot_margins
from keras_lrphase.analysis.transfer_plot import plot_transfer
from keras_lrphase.analysis.transfer_probe import feature_layer
from keras_lrphase.analysis.transfer_probe import penultimate_features
from keras_lrphase.analysis.transfer_probe import transfer_probe
from keras_lrphase.analysis.transfer_table import TransferRow
from keras_lrphase.analysis.transfer_table import TransferTable

__all__ = ["ConnectingCurve", "LinearProbe", "LossPlane", "TransferRow",
           "TransferTable", "cca", "default_layers", "feature_layer",
           "fit_curve", "fit_linear_probe", "layer_similarity",
           "linear_path", "loss_plane", "normalized_margins",
           "penultimate_features", "plot_connection", "plot_layer_similarity",
           "plot_loss_plane", "plot_margins", "plot_parameter_change",
           "plot_transfer", "quartile_statistics", "recalibrate_batch_norm",
           "svcca", "transfer_probe"]
from keras_lrphase.analysis.spectrum_plot import plot_eigenvalue_trajectories
from keras_lrphase.analysis.spectrum_plot import plot_hessian_density
from keras_lrphase.analysis.spectrum_plot import plot_layer_eigenvalues
