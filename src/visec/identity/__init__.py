"""TIT: trustworthy identity tracing by multi-attribute synergistic identification.

A reconstruction of Liu et al., "Toward Trustworthy Identity Tracing via Multi-attribute
Synergistic Identification" (arXiv 2311.02703). Only the abstract could be read and no official
code exists, so every definition here is the documented reconstruction of the method notes
(section 2 of ``specs/retrieval-identity-prompt.md``), tested against hand-computed answers:

* identity model (:mod:`.entropy`): ``identity_entropy``, ``conditional_identity_entropy``
  (``H(ID | A_S)``), ``individual_conditional_entropy`` (``h_u(S)``), ``core_identification_set``
  (exact search or greedy set cover); all in bits;
* attribute schema and files (:mod:`.schema`): CSV population + JSON sidecar;
* observation model (:mod:`.encoding`): reliability + confusion per attribute;
* tracer (:mod:`.tracer`): greedy expected-information-gain tracing, crisp or noisy, with an
  epsilon/tau stopping rule and a reject option; its gain maths (:mod:`.gain`), posterior
  (:mod:`.posterior`) and interpretable results (:mod:`.results`: :class:`Trace`);
* baselines (:mod:`.baselines`): the :data:`TRACERS` registry of TIT and its baselines;
* simulator (:mod:`.simulate`): a seeded 1000 x 20 population with twins, three query regimes;
* evaluation (:mod:`.evaluate`): top-1 accuracy, false-identification and rejection rates, ...

Numbers on the simulated data are ours and are **not comparable to the paper**.
"""

from __future__ import annotations

from visec.identity.encoding import EncodedPopulation, encode_population
from visec.identity.entropy import (
    CoreSet,
    attribute_entropies,
    conditional_identity_entropy,
    core_identification_set,
    core_identification_sets,
    entropy_bits,
    identity_entropy,
    individual_conditional_entropies,
    individual_conditional_entropy,
    joint_attribute_entropy,
    population_core_set,
)
from visec.identity.errors import IdentityError, ObjectIndexError, SchemaError, UnknownAttributeError
from visec.identity.evaluate import (
    DEFAULT_METHODS,
    Evaluation,
    core_set_summary,
    entropy_curve,
    evaluate,
    run_baselines,
    run_regimes,
    summarize,
    summary_table,
)
from visec.identity.schema import (
    AttributeSpec,
    Schema,
    infer_schema,
    read_population,
    read_queries,
    sidecar_paths,
    write_population,
    write_queries,
)
from visec.identity.simulate import REGIMES, Simulation, dataset_hash, simulate, write_simulation
from visec.identity.baselines import BASELINES, METHODS, TRACERS, make_tracer
from visec.identity.results import Explanation, Trace, TraceStep
from visec.identity.tracer import Tracer, explain, trace

__all__ = [
    "AttributeSpec", "BASELINES", "CoreSet", "DEFAULT_METHODS", "EncodedPopulation", "Evaluation",
    "Explanation", "IdentityError", "METHODS", "ObjectIndexError", "REGIMES", "Schema", "SchemaError",
    "Simulation", "TRACERS", "Trace", "TraceStep", "Tracer", "UnknownAttributeError", "attribute_entropies",
    "conditional_identity_entropy", "core_identification_set", "core_identification_sets",
    "core_set_summary", "dataset_hash", "encode_population", "entropy_bits", "entropy_curve", "evaluate",
    "explain", "identity_entropy", "individual_conditional_entropies", "individual_conditional_entropy",
    "infer_schema", "joint_attribute_entropy", "make_tracer", "population_core_set", "read_population",
    "read_queries", "run_baselines", "run_regimes", "sidecar_paths", "simulate", "summarize",
    "summary_table", "trace", "write_population", "write_queries", "write_simulation",
]
