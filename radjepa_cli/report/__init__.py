"""LLaVA-style report generation (paper Section 4 / 5.1): frozen encoder → projector → causal LM.

projector.py  mlp2x_gelu (default) and the paper's residual adapter     lm.py        tiny | smollm2 | local HF LM
prompt.py     the paper's prompt, image placeholder, label masking     model.py     ReportModel (splice + generate)
features.py   image preparation and the encoder-token cache            train.py     `train-report` (two stages)
bundle.py     the self-contained report model directory                generate.py  `generate-report`
probe.py      ridge probe + masked label F1 (numpy)                    scoring.py   report F1 vs probe F1, summary
diagnostics.py `diagnose-report`: where the image signal is lost       progress.py  the shared progress bar
"""
