"""A scale schedule whose sizes follow the Fibonacci numbers, capped by the latent size."""

from varkit import SCALE_SCHEDULES, Scales


@SCALE_SCHEDULES.register("fibonacci")
def fibonacci(latent_size: int = 16) -> Scales:
    """Fibonacci sizes 1, 2, 3, 5, 8, 13, ... below the latent size, then the latent size itself."""
    if latent_size < 1:
        raise ValueError(f"latent_size must be >= 1, got {latent_size}")
    sizes, a, b = [], 1, 2
    while a < latent_size:
        sizes.append(a)
        a, b = b, a + b
    return Scales.of([*sizes, latent_size])
