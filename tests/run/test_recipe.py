"""Tests of jaxbp.run.recipe: a run's first state is the draw of its seeds, bit for bit."""

import jax
import numpy as np
import pytest

from jaxbp.run import config as config_lib
from jaxbp.run import recipe
from jaxbp.training import members


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_the_first_state_is_exactly_what_init_params_draws(precision):
    # The draw is compiled at XLA's lowest optimisation level; it must change no bit.
    config = config_lib.make_config("iris", repeats=3, seed=7, precision=precision)
    with jax.enable_x64(precision == "float64"):
        data = recipe.load_data(config)
        model = recipe.build_model(config, data)
        state = recipe.initial_member_state(config, model, recipe.member_optimizer(config, 5))
        keys = members.member_keys([7, 8, 9])
        expected = jax.jit(lambda k: members.init_member_params(k, model, np.dtype(precision)))(
            keys
        )
    np.testing.assert_array_equal(np.asarray(state.key), np.asarray(keys))
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected), strict=True):
        assert got.dtype == np.dtype(precision)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
