################################################################################
#
# python-pylibjpeg-openjpeg
#
################################################################################

PYTHON_PYLIBJPEG_OPENJPEG_VERSION = 2.6.0
PYTHON_PYLIBJPEG_OPENJPEG_SOURCE = pylibjpeg_openjpeg-$(PYTHON_PYLIBJPEG_OPENJPEG_VERSION).tar.gz
PYTHON_PYLIBJPEG_OPENJPEG_SITE = https://files.pythonhosted.org/packages/91/99/e9b373caebb260101e5ca78371085436fd44196a6bbeb8528624fbcf7504
PYTHON_PYLIBJPEG_OPENJPEG_SETUP_TYPE = poetry
PYTHON_PYLIBJPEG_OPENJPEG_LICENSE = MIT, BSD-2-Clause (bundled JPEG 2000 codec), MIT (bundled colour management library)
PYTHON_PYLIBJPEG_OPENJPEG_LICENSE_FILES = \
	LICENSE \
	lib/openjpeg/LICENSE \
	lib/openjpeg/thirdparty/liblcms2/COPYING
# The poetry build script runs cmake on the bundled codec to write
# its configuration headers, then Cython, with the NumPy headers taken
# from the host NumPy (same version as the target one).
PYTHON_PYLIBJPEG_OPENJPEG_DEPENDENCIES = \
	$(BR2_CMAKE_HOST_DEPENDENCY) \
	host-python-cython \
	host-python-numpy \
	host-python-setuptools \
	python-numpy
# cmake is run without arguments: point it at the target toolchain.
PYTHON_PYLIBJPEG_OPENJPEG_ENV = \
	CMAKE_TOOLCHAIN_FILE=$(HOST_DIR)/share/buildroot/toolchainfile.cmake
# The sdist asks for poetry-core < 2; the 2.x in Buildroot builds it.
PYTHON_PYLIBJPEG_OPENJPEG_BUILD_OPTS = --skip-dependency-check

$(eval $(python-package))
