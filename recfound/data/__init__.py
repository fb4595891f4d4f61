"""Raw sources -> unified 13-task dataset: readers, seeded sample, builder, validation gate."""
