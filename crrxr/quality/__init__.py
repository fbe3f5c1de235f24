"""crrxr.quality: covariance for users, PSF/correlation/mask measures of a cube, the PSF map."""
