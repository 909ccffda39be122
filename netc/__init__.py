"""netc: a compiler for neural-network specs.

    model = netc.compile("specs/mnist_mlp.net")
    model.fit(epochs=1).history_                # fit returns the model
    model.predict(x); model.predict_proba(x); model.score(x, t)  # labels, probabilities, accuracy
    model.save("run"); netc.load("run")
    netc.sklearn.NetcClassifier(spec, epochs=5)  # a scikit-learn estimator (needs scikit-learn)
    model.fit(out="run"); netc.resume("run")  # continue an interrupted run
    netc.pretrain("specs/pretrain_1000.net")  # layer-wise pretraining, then fine-tuning
"""
from netc.compiler.errors import DataError, NetcError, SpecError

from .model import VERSION as __version__
from .model import Model, compile, load
from .pretrain import pretrain
from .resume import resume

__all__ = ["compile", "load", "resume", "pretrain", "Model", "NetcError", "SpecError", "DataError", "__version__"]
