"""The recipe: a typed, frozen schema with a section per stage (`schema`), parsed once at the edge with every
problem reported together (`parse`), and its generated reference (`docs`). Importing it imports neither torch nor
transformers nor peft: `adapt validate` answers in milliseconds."""

from adapt.recipe.parse import (  # noqa: F401
    TRACKERS,
    apply_overrides,
    load_recipe,
    parse_recipe,
    read_recipe_file,
    recipe_key,
    recipe_to_dict,
    recipe_to_yaml,
    schema_field,
    schema_fields,
    type_name,
)
from adapt.recipe.schema import (  # noqa: F401
    DataConfig,
    EvalConfig,
    HubConfig,
    LoraSection,
    MethodConfig,
    ModelConfig,
    PeftSection,
    Recipe,
    ReportConfig,
    SourceData,
    TargetData,
    TrainConfig,
)
