"""ccmon's moving parts: the Faust worker, Redis state, the exporter and the command line."""
