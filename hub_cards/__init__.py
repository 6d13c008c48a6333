"""Model cards and publishing for Image GPT checkpoints: `python -m hub_cards.publish` and
`python -m hub_cards.convert_released`, run from the checkout's root (hub_cards is the checkout's tooling, not an
installed package)."""
