from django.db import migrations, models

# SQLite's AlterField would copy both tables, every vector blob, to drop an index: drop the indexes
# themselves (PostgreSQL also has a _like index for each).
INDEXES = [
    "pipeline_imagevector_model_7feb1663",
    "pipeline_imagevector_model_7feb1663_like",
    "pipeline_windowvectors_model_e55c796b",
    "pipeline_windowvectors_model_e55c796b_like",
]


class Migration(migrations.Migration):
    dependencies = [
        ("pipeline", "0002_window_vectors"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    [f'DROP INDEX IF EXISTS "{name}"' for name in INDEXES],
                    reverse_sql=[
                        'CREATE INDEX "pipeline_imagevector_model_7feb1663" ON "pipeline_imagevector" ("model")',
                        'CREATE INDEX "pipeline_windowvectors_model_e55c796b" ON "pipeline_windowvectors" ("model")',
                    ],
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="imagevector",
                    name="model",
                    field=models.CharField(max_length=300),
                ),
                migrations.AlterField(
                    model_name="windowvectors",
                    name="model",
                    field=models.CharField(max_length=300),
                ),
            ],
        ),
    ]
