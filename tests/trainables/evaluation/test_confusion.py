"""The confusion matrix as a wide table reads like sklearn's matrix, row by row."""

import numpy as np
import pandas
from sklearn.metrics import confusion_matrix

from trainables.evaluation import confusion_matrix_wide, confusion_table


def test_wide_table_has_a_row_per_true_class_and_a_column_per_predicted_class() -> None:
    generator = np.random.default_rng(0)
    names = ["cat", "dog", "owl"]
    true, predicted = generator.integers(0, 3, 200), generator.integers(0, 3, 200)
    matrix = confusion_matrix(true, predicted, labels=[0, 1, 2]).tolist()
    wide = pandas.DataFrame(confusion_matrix_wide(matrix, names)).set_index("true \\ predicted")
    # The reference: a cross-tabulation of the named labels themselves.
    reference = pandas.crosstab(pandas.Series(np.array(names)[true], name="true"),
                                pandas.Series(np.array(names)[predicted], name="predicted"))
    assert list(wide.index) == names and list(wide.columns) == names
    assert (wide.to_numpy() == reference.loc[names, names].to_numpy()).all()
    # The long table holds the same counts, one row per pair.
    long = pandas.DataFrame(confusion_table(matrix, names))
    assert long.pivot(index="true_class", columns="predicted_class", values="count").loc[names, names].equals(
        wide.rename_axis(index="true_class", columns="predicted_class"))
