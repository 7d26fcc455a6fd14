################################################################################
#
# python-pyjpegls
#
################################################################################

PYTHON_PYJPEGLS_VERSION = 1.5.1
PYTHON_PYJPEGLS_SOURCE = pyjpegls-$(PYTHON_PYJPEGLS_VERSION).tar.gz
PYTHON_PYJPEGLS_SITE = https://files.pythonhosted.org/packages/2c/59/98f5e19752ae8ffea9b0d15b4ad3b20022d96479201b9674d4708e3293d1
PYTHON_PYJPEGLS_SETUP_TYPE = setuptools
# The sdist ships no license text; its metadata declares MIT, and the
# bundled JPEG-LS codec is BSD-3-Clause.
PYTHON_PYJPEGLS_LICENSE = MIT, BSD-3-Clause (bundled JPEG-LS codec)
# setup.py runs Cython and takes the NumPy headers from the host NumPy,
# which has the same version as the target one.
PYTHON_PYJPEGLS_DEPENDENCIES = \
	host-python-cython \
	host-python-numpy \
	python-numpy

$(eval $(python-package))
