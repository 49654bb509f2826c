"""Registry data for vsrife's weights (installed as ``vsrife.registry``); see registry.json."""
