// Never compiled: the source of flock_readme_flags, a target that only carries compile flags.
