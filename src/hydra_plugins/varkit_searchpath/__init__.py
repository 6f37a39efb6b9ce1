"""Hydra search-path plugin: adds the ``conf`` packages of installed varkit plugins to Hydra's search path.

After ``pip install varkit-foo`` (entry point ``varkit.plugins: foo = varkit_foo``), a file
``varkit_foo/conf/quantizer/foo.yaml`` becomes the option ``quantizer=foo`` of varkit's configs.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class VarkitPluginSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        try:
            from varkit.plugins import plugin_config_packages
        except ImportError:  # Hydra scans every installed search-path plugin, also for apps other than varkit
            return
        for package in plugin_config_packages():
            search_path.append(provider=f"varkit-plugin:{package}", path=f"pkg://{package}")
