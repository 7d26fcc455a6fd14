################################################################################
#
# python-pylibjpeg
#
################################################################################

PYTHON_PYLIBJPEG_VERSION = 2.1.0
PYTHON_PYLIBJPEG_SOURCE = pylibjpeg-$(PYTHON_PYLIBJPEG_VERSION).tar.gz
PYTHON_PYLIBJPEG_SITE = https://files.pythonhosted.org/packages/1a/39/51c543a27592f3e9a92a3769d4cb1ef675488b79a90fef56af9071358b07
PYTHON_PYLIBJPEG_SETUP_TYPE = flit
PYTHON_PYLIBJPEG_LICENSE = MIT
PYTHON_PYLIBJPEG_LICENSE_FILES = LICENCE.txt

$(eval $(python-package))
