# Sourced by scripts/_bootstrap.sh: Debian packages the tests need. libudunits2-0: the UDUNITS-2
# library behind cfunits, which the CF checker (cfchecker, `test` extra) uses to check unit strings.
# Needs root (as on the project's machines and CI); without it the CF test skips with the reason.
if ! ldconfig -p 2>/dev/null | grep -q libudunits2; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[crrxr] installing libudunits2-0 (Debian) for the CF checker"
        { apt-get update -qq && apt-get install -y -qq libudunits2-0; } >/dev/null 2>&1 ||
            echo "[crrxr] could not install libudunits2-0; the CF checker test will skip"
    else
        echo "[crrxr] libudunits2 missing and no root/apt-get; the CF checker test will skip"
    fi
fi
