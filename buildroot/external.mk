include $(sort $(wildcard $(BR2_EXTERNAL_FLUXBOX_PATH)/package/*/*.mk))
