"""The contract every stage of cips-edge shares, torch-free and importing nothing else of the project:
the generator config (config.py), the model file's names and metadata (format.py), the seed rule
(seeds.py), the error types (errors.py), and atomic, self-cleaning file writes and digests (files.py).
The model, training, export, runtime and metrics import it; it imports none of them
(tests/test_layers.py keeps it so)."""
