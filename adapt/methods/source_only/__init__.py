"""`source_only`: supervised training on the labelled source data (plus labelled target data when the recipe
has it). No adaptation: the baseline every adaptation method is measured against."""

from adapt.methods.registry import register_method

register_method(
    "source_only",
    impl="adapt.methods.source_only.method:SourceOnly",
    description="supervised training on the labelled source domain (plus labelled target data when given); no "
                "adaptation, the baseline",
)
