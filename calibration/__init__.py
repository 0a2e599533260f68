"""The calibration session: query policy, labelling UI, label store, personalisation."""
