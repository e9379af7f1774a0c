"""The supported boards' firmware profiles, one TOML file each (``agent.profile`` reads them).

A package only so that the files ship as its data wherever pip installs it (found with importlib.resources).
"""
