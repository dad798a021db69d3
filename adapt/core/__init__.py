"""Small pieces every stage shares and that import nothing else of adapt: errors, atomic files, the run
directory layout, number formatting, schema fields, and the command-line conventions."""
