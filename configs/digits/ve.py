"""PLACEHOLDER"""

from configs.default_digits import get_default_configs


def get_config():
    config = get_default_configs()
    config.sde.name = "ve"
    return config
