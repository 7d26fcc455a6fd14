################################################################################
#
# fluxbox-appliance
#
################################################################################

# The appliance is built from the source tree that holds this external
# tree: the repository root is the parent of BR2_EXTERNAL_FLUXBOX_PATH.
FLUXBOX_APPLIANCE_SRC_ROOT = $(realpath $(BR2_EXTERNAL_FLUXBOX_PATH)/..)
FLUXBOX_APPLIANCE_VERSION = $(shell sed -n 's/^version = "\([^"]*\)".*/\1/p' $(FLUXBOX_APPLIANCE_SRC_ROOT)/pyproject.toml)
FLUXBOX_APPLIANCE_SITE = $(FLUXBOX_APPLIANCE_SRC_ROOT)
FLUXBOX_APPLIANCE_SITE_METHOD = local
FLUXBOX_APPLIANCE_LICENSE = Apache-2.0
# pyproject.toml: setuptools.build_meta
FLUXBOX_APPLIANCE_SETUP_TYPE = setuptools
# Copy only what the wheel is built from: not the virtual environment,
# test data, benchmark output, image/ or this external tree.
FLUXBOX_APPLIANCE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=__pycache__ \
	--exclude=*.pyc \
	--include=/pyproject.toml \
	--include=/README.md \
	--include=/LICENSE \
	--include=/appliance/*** \
	--include=/hw/*** \
	--exclude=*

# The appliance's user and group, with fixed ids because the data
# partition outlives any one root file system: the same ids as the image
# built from distribution packages (FLUXBOX_UID in image/hooks/customize.sh).
FLUXBOX_APPLIANCE_UID = $(or $(shell sed -n 's/^FLUXBOX_UID=\([0-9][0-9]*\).*/\1/p' $(FLUXBOX_APPLIANCE_SRC_ROOT)/image/hooks/customize.sh 2>/dev/null),901)

define FLUXBOX_APPLIANCE_USERS
	fluxbox $(FLUXBOX_APPLIANCE_UID) fluxbox $(FLUXBOX_APPLIANCE_UID) * /var/lib/fluxbox - - Flux Box appliance
endef

$(eval $(python-package))
