__version__ = "0.0.1"


def _register_envs():
    "Register eagle_nb's gymnasium environment (15_gym); its module and heavy imports load only when an Env is made."
    import gymnasium

    if 'eagle_nb/Eagle-v0' not in gymnasium.registry:
        gymnasium.register(
            id='eagle_nb/Eagle-v0',
            entry_point='eagle_nb.gymenv:EagleGymEnv',
            vector_entry_point='eagle_nb.gymenv:EagleVectorEnv',
        )


_register_envs()
