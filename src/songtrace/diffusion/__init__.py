"""songtrace.diffusion: the math of the diffusion process, model-agnostic: the cosine v-objective schedule, noise plans
(common random numbers), the masked v-objective loss and the samplers."""
