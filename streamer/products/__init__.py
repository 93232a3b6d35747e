"""A CCD's intermediate products (post-ISR image, calibrated exposure, difference image, DiaSource tables,
stage timings and configuration) as FITS and Parquet files, and the offline run that writes them."""
