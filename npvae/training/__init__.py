"""Training: the loop and the model/trainer contract (``loop.py``), one trainer per model (``vae.py``,
``m2.py``), checkpoints and evaluation, the validation protocol (``validation.py``). ``npvae.registry`` maps a model's kind to its trainer."""
