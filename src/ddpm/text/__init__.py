"""Text: the frozen sentence encoder (encoder.py), caption templates (captions.py), prompt checking and matching
(prompts.py), and the embedded captions of a training set (bank.py)."""
