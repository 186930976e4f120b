#!/usr/bin/env python3
"""Write the Holdfast Agent app bundle's Info.plist.

usage: info_plist.py VERSION OUT

plistlib writes (and escapes) the XML form Apple documents, the same on
macOS and on Linux, so the dry run here checks the very file a Mac build
ships.
"""

import plistlib
import re
import sys


def info(version: str) -> dict:
    # CFBundleShortVersionString is up to three integers: 1.2.0-rc.1 -> 1.2.0.
    short = re.match(r"\d+(\.\d+){0,2}", version)
    if not short:
        raise SystemExit(f"not a version: {version}")
    return {
        "CFBundleDevelopmentRegion": "en",
        "CFBundleDisplayName": "Holdfast Agent",
        "CFBundleExecutable": "holdfast-agent",
        "CFBundleIconFile": "holdfast.icns",
        "CFBundleIdentifier": "io.holdfast.agent",
        "CFBundleInfoDictionaryVersion": "6.0",
        "CFBundleName": "Holdfast Agent",
        "CFBundlePackageType": "APPL",
        "CFBundleShortVersionString": short.group(0),
        "CFBundleVersion": short.group(0),
        "LSApplicationCategoryType": "public.app-category.business",
        # aarch64-apple-darwin's own minimum.
        "LSMinimumSystemVersion": "11.0",
        "NSHighResolutionCapable": True,
        "NSHumanReadableCopyright": "Copyright The Holdfast authors. Apache-2.0.",
        # The CPU renderer: never wake the discrete GPU.
        "NSSupportsAutomaticGraphicsSwitching": True,
    }


def main() -> None:
    version, out = sys.argv[1], sys.argv[2]
    with open(out, "wb") as f:
        plistlib.dump(info(version), f, fmt=plistlib.FMT_XML, sort_keys=True)


if __name__ == "__main__":
    main()
