################################################################################
#
# python-pydicom
#
################################################################################

PYTHON_PYDICOM_VERSION = 3.0.2
PYTHON_PYDICOM_SOURCE = pydicom-$(PYTHON_PYDICOM_VERSION).tar.gz
PYTHON_PYDICOM_SITE = https://files.pythonhosted.org/packages/7a/de/52aaf905f1f0ae7aba85996e2592ea2c1fe49157f3cfbcd1871965bdb51d
PYTHON_PYDICOM_SETUP_TYPE = flit
# MIT, except the private dictionaries (BSD-3-Clause)
PYTHON_PYDICOM_LICENSE = MIT, BSD-3-Clause
PYTHON_PYDICOM_LICENSE_FILES = LICENSE

$(eval $(python-package))
