"""`save_pretrained` / `from_pretrained` for the toolkit's own small networks (student, pose estimator).

Same files as a diffusers model (config.json + diffusion_pytorch_model.safetensors), written atomically, so a
run folder looks the same whatever network it holds. A class provides `config()` (with "_class_name") and
`from_config(config)`; the mixin does the files.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


class PretrainedMixin:
    def save_pretrained(self, directory) -> None:
        from safetensors.torch import save_file

        from toolkit.artifacts import write_json_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{WEIGHTS_NAME}.tmp"
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        tmp.replace(directory / WEIGHTS_NAME)
        write_json_atomic(directory / CONFIG_NAME, self.config())

    @classmethod
    def from_pretrained(cls, directory):
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (cfg_path, w_path):
            if not path.exists():
                raise FileNotFoundError(f"{directory}: no {cls.__name__} weights ({path.name} missing)")
        config = json.loads(cfg_path.read_text())
        if config.get("_class_name") != cls.__name__:
            raise ValueError(f"{cfg_path}: is a {config.get('_class_name')!r} config, not a {cls.__name__}")
        model = cls.from_config(config)
        model.load_state_dict(load_file(str(w_path)))
        return model.eval()
