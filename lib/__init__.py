"""skip-wganomaly: Skip-GANomaly and Skip-WGANomaly for unsupervised image anomaly detection."""
