"""A stand-in for Demeter, JGCRI's land use and land cover downscaling model.

Small enough for a laptop (a second and a few megabytes per scenario), with
the real model's shape: a scenario name (SSP and resolution, `ssp1_0p5` is
SSP1 at 0.5 degrees), regional land allocation projected by GCAM, constraints
read from the data directory ($DEMETER_DATA, default ./demeter_data), and
one gridded land-cover file written per scenario.
"""

LAND_CLASSES = ["crop", "pasture", "forest", "urban", "other"]
YEARS = [2020, 2030, 2040, 2050]
