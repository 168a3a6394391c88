"""skip-wganomaly: Skip-GANomaly and Skip-WGANomaly for unsupervised image anomaly detection."""
import warnings

# joblib, imported with scikit-learn, warns in two lines with its source where it cannot make its semaphore
# file (ulimit -f 0, a full /dev/shm) and then works serially, which this package does anyway: the warning
# would stand before a command's one-line refusal of the same limit.
warnings.filterwarnings("ignore", message=r".*joblib will operate in serial mode", category=UserWarning)
