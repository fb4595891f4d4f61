"""The models-from-code entry of the registered model: MLflow runs this file when loading it.

Logging the model as code (rather than a pickled object) means loading executes only this
file and the `recfound` package copied next to it; nothing is unpickled.
"""

from mlflow.models import set_model

from recfound.tracking.pyfunc import RecFoundPyFunc

set_model(RecFoundPyFunc())
