"""Model cards and publishing for Image GPT checkpoints: `python hub_cards/publish.py`, `python -m hub_cards.convert_released`."""
