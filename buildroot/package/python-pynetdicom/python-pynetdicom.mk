################################################################################
#
# python-pynetdicom
#
################################################################################

PYTHON_PYNETDICOM_VERSION = 3.0.4
PYTHON_PYNETDICOM_SOURCE = pynetdicom-$(PYTHON_PYNETDICOM_VERSION).tar.gz
PYTHON_PYNETDICOM_SITE = https://files.pythonhosted.org/packages/7f/f5/5a811322d57788b3e98b363ec99f90125c842c18bf891e8def95096fc4d8
PYTHON_PYNETDICOM_SETUP_TYPE = flit
PYTHON_PYNETDICOM_LICENSE = MIT
PYTHON_PYNETDICOM_LICENSE_FILES = LICENCE

$(eval $(python-package))
